"""Real-time risk control of accounts: streaming features, baselines, scoring, graduated responses."""
