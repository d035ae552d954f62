"""Sensors (and schedules): they find work and return run requests; runs do the work."""

import warnings

import dagster as dg

# Dagster's own sensor decorator passes a beta parameter (``owners``); that is not ours to
# act on. Set here, before any sensor of ours is built at import.
warnings.filterwarnings("ignore", category=dg.BetaWarning, module=r"dagster\._core")
