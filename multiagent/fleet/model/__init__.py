"""The pure core: the fleet file's schema, rendering, planning and the safe operations'
state machines."""
