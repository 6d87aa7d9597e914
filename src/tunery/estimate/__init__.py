"""``tunery estimate``: whether a run fits and how long it takes, before any weights load."""
