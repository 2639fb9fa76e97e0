-- Run once by the postgres image on an empty data volume (docker-compose.yml):
-- the Apicurio Registry keeps its SQL storage in its own database, as
-- scripts/stack does. POSTGRES_DB creates `surge` itself.
CREATE DATABASE registry;
