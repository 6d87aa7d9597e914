"""What a run leaves behind to be understood later: the run card, the list of runs, their comparison."""
