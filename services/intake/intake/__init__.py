"""intake: the front door for incident reports, acknowledgements and actions (issue 3)."""
