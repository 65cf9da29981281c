"""The check_drift step: its kfp component and the plain logic it calls."""
