; Go: definitions, references and imports (captures as in python-tags.scm). @qualifier names the
; receiver type a method belongs to.

(function_declaration name: (identifier) @name.definition.function) @definition.function
(method_declaration
  receiver: (parameter_list (parameter_declaration type: [
    (type_identifier) @qualifier
    (pointer_type (type_identifier) @qualifier)
    (generic_type type: (type_identifier) @qualifier)
    (pointer_type (generic_type type: (type_identifier) @qualifier))
  ]))
  name: (field_identifier) @name.definition.method) @definition.method
(type_spec name: (type_identifier) @name.definition.type) @definition.type

(call_expression
  function: [
    (identifier) @name.reference.call
    (selector_expression field: (field_identifier) @name.reference.call)
  ]) @reference.call
(type_identifier) @name.reference.type @reference.type

(import_spec path: (_) @import.module) @import
