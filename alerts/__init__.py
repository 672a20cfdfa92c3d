"""Alert policy: rules, profiles, alert lifecycle, reduction proposals. Pure."""
