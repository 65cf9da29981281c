"""The vertex_batch step: its kfp component and the plain logic it calls."""
