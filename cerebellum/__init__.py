"""The cerebellum: synthesisers predicting each area's future feedback."""
