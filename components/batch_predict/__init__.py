"""The batch_predict step: its kfp component and the plain logic it calls."""
