"""The pairwise preference judge (the classifier stage): its rows and the model that scores pairs."""
