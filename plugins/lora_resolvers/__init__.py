"""Built-in ``heron.lora_resolvers`` plugins: where adapters a request names are looked up."""
