"""Temporal contracts: what Parcours' workflows are called, what they take, answer and are signalled with.

``journey``: the journey workflow's name, signals, query, input, state and result; ``segment``: the segment entry
workflow's; ``search_attributes``: the typed search attributes runs carry. Both the workers and the code that
drives Temporal from outside (``orchestration``) speak through these; the pydantic models travel in histories, so
their field names and shapes only ever gain defaulted fields.
"""
