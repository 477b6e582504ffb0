"""The engine: a schema loaded (compiler.load_schema_file), checked against the metaschema and the checks
(metaschema, definitions, checks, schema_keys, shadowing), compiled into routes of bound steps (compiler, binding,
expr, conditions, codegen, runner, policies), and run per request (run.Engine, context, budget). It knows no HTTP
and no individual op: ops are declared through opspec and handed in by opspec.load_vocabulary."""
