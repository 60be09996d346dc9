"""Built-in ``heron.response_stores`` plugins: where ``/v1/responses`` keeps stored responses."""
