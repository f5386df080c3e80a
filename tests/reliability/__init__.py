"""The reliability suite: scripted attacks on every command (docs/testing.md, "Reliability")."""
