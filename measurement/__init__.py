"""Measurement: the statistics of journeys (experiments, attribution, customer lifetime value).

Pure computations over numbers the store hands in; no database, no Temporal, no network. Imports only
libraries (numpy, pandas, scipy, statsmodels, pydantic), none of the server's packages (``lint-imports`` checks).
"""
