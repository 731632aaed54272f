//! Expressions: `${{ }}` templates and bare `if:` conditions (lexer, parser, evaluator).
