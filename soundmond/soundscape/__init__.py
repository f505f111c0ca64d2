"""Rolling shares and species counts (aggregate) and the alert rules (alerts): pure logic that takes `now`."""
