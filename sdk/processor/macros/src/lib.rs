//! The attributes of `eddy-processor`: `#[map]`, `#[filter]`, `#[filter_map]` and
//! `#[flat_map]`. Each goes on the processor's one function, leaves the function
//! as written, and adds the glue that exports it as the component's `process`
//! (and `init`) functions. Use them through the `eddy_processor` crate, which
//! documents them; this crate has no dependencies, so it parses only what it
//! needs (the function's name and an optional `init = path` argument).

use proc_macro::{Delimiter, Group, Ident, Span, TokenStream, TokenTree};

/// A map processor: `fn(&Record) -> impl MapResult`, one output per input record.
#[proc_macro_attribute]
pub fn map(args: TokenStream, item: TokenStream) -> TokenStream {
    expand("map", args, item)
}

/// A filter processor: `fn(&Record) -> impl FilterResult`; kept records are
/// written unchanged.
#[proc_macro_attribute]
pub fn filter(args: TokenStream, item: TokenStream) -> TokenStream {
    expand("filter", args, item)
}

/// A filter-map processor: `fn(&Record) -> impl FilterMapResult`, zero or one
/// output per input record.
#[proc_macro_attribute]
pub fn filter_map(args: TokenStream, item: TokenStream) -> TokenStream {
    expand("filter_map", args, item)
}

/// A flat-map processor: `fn(&Record) -> impl FlatMapResult`, any number of
/// outputs per input record.
#[proc_macro_attribute]
pub fn flat_map(args: TokenStream, item: TokenStream) -> TokenStream {
    expand("flat_map", args, item)
}

fn expand(shape: &str, args: TokenStream, item: TokenStream) -> TokenStream {
    let name = match function_name(&item) {
        Some(name) => name,
        None => {
            return compile_error(&format!(
                "#[eddy_processor::{shape}] goes on a function (`fn name(record: &Record) -> ...`)"
            ))
        }
    };
    let init = match init_argument(args) {
        Ok(init) => init,
        Err(message) => return compile_error(&message),
    };
    let init_expr = match init {
        Some(path) => format!("::core::option::Option::Some({path} as ::eddy_processor::__private::InitFn)"),
        None => "::core::option::Option::None".to_string(),
    };
    let glue = format!(
        r#"
        #[doc(hidden)]
        const _: () = {{
            struct __EddyProcessor;
            impl ::eddy_processor::__private::Guest for __EddyProcessor {{
                fn init(
                    params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<(), ::std::string::String> {{
                    ::eddy_processor::__private::init(params, {init_expr})
                }}
                fn process(
                    batch: ::eddy_processor::__private::InputBatch,
                ) -> ::eddy_processor::__private::OutputBatch {{
                    ::eddy_processor::__private::{shape}(batch, {name})
                }}
            }}
            ::eddy_processor::__private::export!(__EddyProcessor with_types_in ::eddy_processor::__private::bindings);
        }};
        "#
    );
    let mut out = item;
    out.extend(glue.parse::<TokenStream>().expect("the glue is valid Rust"));
    out
}

/// The identifier after the `fn` keyword.
fn function_name(item: &TokenStream) -> Option<String> {
    let mut tokens = item.clone().into_iter();
    while let Some(token) = tokens.next() {
        if let TokenTree::Ident(ident) = &token {
            if ident.to_string() == "fn" {
                return match tokens.next() {
                    Some(TokenTree::Ident(name)) => Some(name.to_string()),
                    _ => None,
                };
            }
        }
    }
    None
}

/// Parses `init = some::path` (or nothing).
fn init_argument(args: TokenStream) -> Result<Option<String>, String> {
    let tokens: Vec<TokenTree> = args.into_iter().collect();
    if tokens.is_empty() {
        return Ok(None);
    }
    let usage = "expected `init = function_name` (or no argument)";
    match (&tokens[0], tokens.get(1)) {
        (TokenTree::Ident(key), Some(TokenTree::Punct(eq))) if key.to_string() == "init" && eq.as_char() == '=' => {}
        _ => return Err(usage.to_string()),
    }
    let path: String = tokens[2..].iter().map(ToString::to_string).collect();
    if path.is_empty() || path.contains(',') {
        return Err(usage.to_string());
    }
    Ok(Some(path))
}

fn compile_error(message: &str) -> TokenStream {
    let mut body = TokenStream::new();
    body.extend([TokenTree::Literal(proc_macro::Literal::string(message))]);
    TokenStream::from_iter([
        TokenTree::Ident(Ident::new("compile_error", Span::call_site())),
        TokenTree::Punct(proc_macro::Punct::new('!', proc_macro::Spacing::Alone)),
        TokenTree::Group(Group::new(Delimiter::Parenthesis, body)),
        TokenTree::Punct(proc_macro::Punct::new(';', proc_macro::Spacing::Alone)),
    ])
}
