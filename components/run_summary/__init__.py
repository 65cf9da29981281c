"""The run_summary step: its kfp component and the plain logic it calls."""
