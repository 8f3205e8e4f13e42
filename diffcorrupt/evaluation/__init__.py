"""Feature networks and the metrics computed from them."""
