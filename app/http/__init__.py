"""The HTTP layer: the waitress front end (server), the Flask glue that turns a request into RequestData and runs
the matched route on the engine (app), the response writer both it and the management API answer through
(responses), the admin/auth API's views (management), and the OpenAPI document of it all (openapi,
openapi_components, openapi_views). Request bodies are read by
app.engine.body, which knows no Flask: ops read them too."""
