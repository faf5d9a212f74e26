"""How derivatives are computed: one module per engine."""
