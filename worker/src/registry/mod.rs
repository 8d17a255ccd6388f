//! Task functions: the registry that maps dotted names to Rust functions.
//!
//! Users who build their own worker binary register their functions here:
//!
//! ```
//! use q8s::{Call, Registry, TaskError};
//! use serde_json::{json, Value};
//!
//! let mut registry = Registry::with_builtins(&[]).expect("no exec globs to check");
//! registry.register("myapp.double", |call: &Call| -> Result<Value, TaskError> {
//!     Ok(json!(call.f64_arg(0, "x")? * 2.0))
//! });
//! assert!(registry.contains("myapp.double"));
//! ```

mod builtins;
mod exec;
mod http;

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::task::{ErrorKind, Task, TaskError};

pub use exec::ExecPolicy;

/// A task function: arguments in, JSON result or error out.
pub type TaskFn = Arc<dyn Fn(&Call) -> Result<Value, TaskError> + Send + Sync>;

/// Why a registry could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// An `exec_allow` glob does not parse.
    #[error("exec_allow: {0}")]
    BadGlob(String),
}

/// What a function is called with.
#[derive(Debug)]
pub struct Call<'a> {
    /// The function's dotted name.
    pub func: &'a str,
    /// Positional arguments.
    pub args: &'a [Value],
    /// Keyword arguments.
    pub kwargs: &'a Map<String, Value>,
    /// How long the task may run, if limited.
    pub timeout: Option<Duration>,
}

impl Call<'_> {
    /// Positional argument `index`, or keyword argument `name`.
    pub fn arg(&self, index: usize, name: &str) -> Option<&Value> {
        self.args.get(index).or_else(|| self.kwargs.get(name))
    }

    /// Argument `index` (or `name`) as a number, with an error that says what was wrong.
    pub fn f64_arg(&self, index: usize, name: &str) -> Result<f64, TaskError> {
        match self.arg(index, name) {
            Some(value) => value.as_f64().ok_or_else(|| {
                TaskError::bad_arguments(format!(
                    "{}: argument {name} must be a number, got {value}",
                    self.func
                ))
            }),
            None => Err(TaskError::bad_arguments(format!(
                "{}: missing argument {name} (position {})",
                self.func,
                index + 1
            ))),
        }
    }

    /// Fails unless exactly `names.len()` positional-or-keyword arguments were given.
    pub fn expect_arity(&self, names: &[&str]) -> Result<(), TaskError> {
        let given = self.args.len() + self.kwargs.len();
        if given == names.len() {
            return Ok(());
        }
        Err(TaskError::bad_arguments(format!(
            "{} takes {} argument(s) ({}), got {given}",
            self.func,
            names.len(),
            names.join(", ")
        )))
    }
}

/// Maps dotted function names to functions.
#[derive(Clone)]
pub struct Registry {
    functions: HashMap<String, TaskFn>,
    exec: Arc<ExecPolicy>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            functions: HashMap::new(),
            // No globs: no program may run until `exec_allow` names it.
            exec: Arc::new(ExecPolicy::refusing_all()),
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("functions", &self.names())
            .finish()
    }
}

impl Registry {
    /// A registry with no functions.
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// The built-ins, `http.request`, and `exec` limited to programs matching `exec_allow`.
    pub fn with_builtins(exec_allow: &[String]) -> Result<Registry, RegistryError> {
        let mut registry = Registry::empty();
        builtins::register(&mut registry);
        http::register(&mut registry);
        let policy = Arc::new(ExecPolicy::new(exec_allow)?);
        registry.exec = Arc::clone(&policy);
        registry.register("exec", move |call: &Call| exec::run(&policy, call));
        Ok(registry)
    }

    /// Runs `program`, if `exec_allow` allows it, with `input` on stdin; it and everything
    /// it started are killed after `timeout`.
    pub fn run_program(
        &self,
        program: &str,
        input: String,
        timeout: Option<Duration>,
    ) -> Result<Value, TaskError> {
        exec::run_program(&self.exec, program, input, timeout, true)
    }

    /// Registers `function` under `name`, replacing any function of that name.
    pub fn register<F>(&mut self, name: &str, function: F)
    where
        F: Fn(&Call) -> Result<Value, TaskError> + Send + Sync + 'static,
    {
        self.functions.insert(name.to_string(), Arc::new(function));
    }

    /// Whether a function of that name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.functions.contains_key(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.functions.keys().cloned().collect();
        names.sort();
        names
    }

    /// Calls `func`; an unknown name or a panic becomes a failed task, never a crash.
    pub fn call(&self, call: &Call) -> Result<Value, TaskError> {
        let Some(function) = self.functions.get(call.func) else {
            return Err(TaskError::new(
                ErrorKind::UnknownFunction,
                format!("no function named {}", call.func),
            ));
        };
        catch_unwind(AssertUnwindSafe(|| function(call))).unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(TaskError::new(
                ErrorKind::Panicked,
                format!("{} panicked: {message}", call.func),
            ))
        })
    }

    /// Runs `task`'s function with its arguments, `timeout` being the task's limit if any.
    pub fn run(&self, task: &Task, timeout: Option<Duration>) -> Result<Value, TaskError> {
        self.call(&Call {
            func: &task.func,
            args: &task.args,
            kwargs: &task.kwargs,
            timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(registry: &Registry, func: &str, args: Vec<Value>) -> Result<Value, TaskError> {
        let kwargs = Map::new();
        registry.call(&Call {
            func,
            args: &args,
            kwargs: &kwargs,
            timeout: None,
        })
    }

    #[test]
    fn unknown_function_fails_with_its_name() {
        let registry = Registry::empty();
        let error = call(&registry, "my.buggy.code", vec![]).expect_err("unknown");
        assert_eq!(error.kind, ErrorKind::UnknownFunction);
        assert_eq!(error.message, "no function named my.buggy.code");
    }

    #[test]
    fn panicking_function_is_a_failed_task() {
        let mut registry = Registry::empty();
        registry.register("boom", |_: &Call| panic!("kaboom"));
        let error = call(&registry, "boom", vec![]).expect_err("panics");
        assert_eq!(error.kind, ErrorKind::Panicked);
        assert!(error.message.contains("kaboom"));
    }

    #[test]
    fn user_functions_are_called_with_their_arguments() {
        let mut registry = Registry::empty();
        registry.register("myapp.add", |call: &Call| {
            Ok(json!(call.f64_arg(0, "a")? + call.f64_arg(1, "b")?))
        });
        assert_eq!(
            call(&registry, "myapp.add", vec![json!(1), json!(2)]),
            Ok(json!(3.0))
        );
    }
}
