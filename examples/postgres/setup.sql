-- Source tables for the PostgreSQL examples, and the `warehouse` schema they load into.
-- psql -h 127.0.0.1 -U postgres -d test -f examples/postgres/setup.sql
DROP TABLE IF EXISTS customers, orders;
CREATE SCHEMA IF NOT EXISTS warehouse;

CREATE TABLE customers (
  id          integer PRIMARY KEY,
  name        text NOT NULL,
  email       text,
  country     char(2),
  created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (id, name, email, country, created_at) VALUES
  (10, 'Ada Lovelace',  'ada@example.com',   'GB', '2024-01-02 09:00:00+00'),
  (11, 'Grace Hopper',  'grace@example.com', 'US', '2024-01-03 10:30:00+00'),
  (12, 'Zoë Müller',    'zoe@example.de',    'DE', '2024-01-04 11:45:00+00');

CREATE TABLE orders (
  id          bigint PRIMARY KEY,
  customer_id integer NOT NULL REFERENCES customers (id),
  amount      numeric(12, 2) NOT NULL,
  status      text NOT NULL,
  updated_at  timestamptz NOT NULL
);
INSERT INTO orders (id, customer_id, amount, status, updated_at) VALUES
  (1, 10, 25.00, 'paid',    '2024-01-05 08:00:00+00'),
  (2, 11, 12.50, 'paid',    '2024-01-06 09:15:00+00'),
  (3, 10, 30.00, 'pending', '2024-01-07 10:30:00+00'),
  (4, 12, 40.00, 'paid',    '2024-01-08 11:45:00+00');
