"""What a run leaves behind: the leaderboard, the results JSON, comparisons between runs, charts and HTML."""
