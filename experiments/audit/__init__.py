"""The audit: indicators of attack failure, their remedies, and every attack's optimality."""
