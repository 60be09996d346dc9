"""The Responses API's pieces: request translation, output building, runs and the store they share."""
