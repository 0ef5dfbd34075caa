"""The inferior olive: compares predictions with what really arrived."""
