"""The work of each pipeline step as plain, tested functions.

These modules import no kfp, so the step processes (which run with kfp's runtime-only
``kfp.dsl``) can import them, and tests call them directly.
"""
