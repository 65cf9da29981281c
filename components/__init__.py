"""Pipeline steps: thin kfp components whose bodies call plain, tested functions."""
