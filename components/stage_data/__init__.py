"""The stage_data step: its kfp component and the plain logic it calls."""
