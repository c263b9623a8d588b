"""Pure core: artifacts (desired files), actions and the comparison of desired state with observed facts."""
