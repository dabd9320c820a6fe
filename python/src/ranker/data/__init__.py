"""Stage 1, the click log: its schemas (`schema`, what every stage reads) and
the synthetic news world that writes one (`world`)."""
