"""The vertex_steps step: its kfp component and the plain logic it calls."""
