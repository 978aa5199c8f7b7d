"""Neural architecture search for the target: the search space, candidates checked for deployability
before any training, and the search strategies (issue 16; built in slices)."""
