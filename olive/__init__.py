"""The inferior olive: compares predictions with what really arrived (DESIGN §3)."""
