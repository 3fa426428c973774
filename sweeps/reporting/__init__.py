"""Reading a finished study for people: leaderboard, plots, error analysis, Optuna views."""
