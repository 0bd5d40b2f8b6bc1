-- Runs once when the PostgreSQL volume is created: Parcours' own database and role beside Temporal's.
CREATE ROLE parcours LOGIN PASSWORD 'parcours';
CREATE DATABASE parcours OWNER parcours;
