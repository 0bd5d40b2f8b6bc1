"""Driving Temporal from outside the workers: the one package that starts, signals, finds and exits journey runs.

``runs`` (enter: start, or signal the running run; signal; is it running), ``admission`` (the entry sequence:
claim, start, release),
``router`` (events to journeys, with its outbox drainer) and ``merges`` (telling a merged profile's runs),
``exits`` (archiving and erasure send running journeys away), ``schedules`` (segment schedules), ``visibility``
(list filters, quoted), ``errors`` (what a failed Temporal call means), ``search_attributes`` (registering them).
The API, the CLI, the local stack and the activities all go through here; nothing here imports workflow code.
"""
