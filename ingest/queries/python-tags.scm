; Python: definitions, references and imports. Captures follow the grammars' own tags.scm:
; @definition.KIND with @name.definition.KIND, @reference.KIND with @name.reference.KIND, and
; Cairn's @import with @import.module / @import.name.

; Module-level names bound by assignment (the grammar puts the assignment under module or, in older
; versions, under an expression_statement).
(module [
  (assignment left: (identifier) @name.definition.constant) @definition.constant
  (expression_statement (assignment left: (identifier) @name.definition.constant) @definition.constant)
])

(class_definition name: (identifier) @name.definition.class) @definition.class

(function_definition name: (identifier) @name.definition.function) @definition.function

(call
  function: [
    (identifier) @name.reference.call
    (attribute attribute: (identifier) @name.reference.call)
  ]) @reference.call

(class_definition
  superclasses: (argument_list [
    (identifier) @name.reference.class
    (attribute attribute: (identifier) @name.reference.class)
  ])) @reference.class

(decorator [
  (identifier) @name.reference.call
  (attribute attribute: (identifier) @name.reference.call)
]) @reference.call

; Uses of class-like names (CapWords): isinstance checks, annotations, registries.
((identifier) @name.reference.use @reference.use
  (#match? @name.reference.use "^[A-Z][A-Za-z0-9_]*[a-z][A-Za-z0-9_]*$"))

(import_statement name: [
  (dotted_name) @import.module
  (aliased_import name: (dotted_name) @import.module)
]) @import

(import_from_statement
  module_name: (_) @import.module
  name: [
    (dotted_name) @import.name
    (aliased_import name: (dotted_name) @import.name)
  ]) @import

(import_from_statement
  module_name: (_) @import.module
  (wildcard_import)) @import
