-- Customer value (store/customer_values.py): each customer's order history and predicted lifetime value, as
-- computed by the last refresh (workflows/customer_values.py). A table of its own, apart from the customer's
-- attributes: a PUT of the profile never writes it and a refresh never touches what the customer or the API set.
-- Erased with the customer (ON DELETE CASCADE, and explicitly by store.privacy to count it).
CREATE TABLE customer_values (
    customer_id          text PRIMARY KEY REFERENCES customers(id) ON DELETE CASCADE,
    orders_count         integer NOT NULL,
    revenue              double precision NOT NULL,
    first_order_at       timestamptz NOT NULL,
    last_order_at        timestamptz NOT NULL,
    average_order_value  double precision NOT NULL,
    clv                  double precision NOT NULL,
    clv_model            text NOT NULL,
    expected_orders      double precision NOT NULL,
    probability_alive    double precision,
    computed_at          timestamptz NOT NULL,
    -- The refresh that wrote the row; rows an ended refresh did not write (no orders any more) are removed.
    refresh_id           text NOT NULL
);
