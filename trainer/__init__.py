"""Training, evaluation, export and prediction of the poster genre classifier."""
