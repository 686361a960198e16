; Java: definitions, references and imports (captures as in python-tags.scm).

(class_declaration name: (identifier) @name.definition.class) @definition.class
(interface_declaration name: (identifier) @name.definition.interface) @definition.interface
(enum_declaration name: (identifier) @name.definition.enum) @definition.enum
(record_declaration name: (identifier) @name.definition.class) @definition.class
(method_declaration name: (identifier) @name.definition.method) @definition.method
(constructor_declaration name: (identifier) @name.definition.method) @definition.method

(method_invocation name: (identifier) @name.reference.call) @reference.call
(object_creation_expression type: (type_identifier) @name.reference.class) @reference.class
(type_identifier) @name.reference.type @reference.type

(import_declaration [(scoped_identifier) (identifier)] @import.module) @import
