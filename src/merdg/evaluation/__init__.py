"""Pure evaluation code: metrics, open-set scoring, statistics and figures of results."""
