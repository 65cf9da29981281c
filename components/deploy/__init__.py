"""The deploy step: its kfp component and the plain logic it calls."""
