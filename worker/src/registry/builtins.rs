//! Built-in functions mirroring the seed's examples, and q8s's own test functions.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Call, Registry};
use crate::task::TaskError;

/// Memory held by `q8s.alloc` for the life of the worker process, so `max_rss` sees it.
static HELD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Largest allocation `q8s.alloc` accepts, in MiB.
const MAX_ALLOC_MIB: u64 = 16 * 1024;

pub(super) fn register(registry: &mut Registry) {
    registry.register("math.copysign", |call: &Call| {
        call.expect_arity(&["x", "y"])?;
        Ok(json!(call.f64_arg(0, "x")?.copysign(call.f64_arg(1, "y")?)))
    });
    registry.register("math.modf", |call: &Call| {
        call.expect_arity(&["x"])?;
        let x = call.f64_arg(0, "x")?;
        Ok(json!([x.fract(), x.trunc()]))
    });
    registry.register("math.hypot", |call: &Call| {
        if !call.kwargs.is_empty() {
            return Err(TaskError::bad_arguments(
                "math.hypot takes positional numbers only",
            ));
        }
        let squares = (0..call.args.len())
            .map(|i| call.f64_arg(i, "x").map(|x| x * x))
            .sum::<Result<f64, TaskError>>()?;
        Ok(json!(squares.sqrt()))
    });
    registry.register("math.sqrt", |call: &Call| {
        call.expect_arity(&["x"])?;
        let x = call.f64_arg(0, "x")?;
        if x < 0.0 {
            return Err(TaskError::failed(
                "math domain error: sqrt of a negative number",
            ));
        }
        Ok(json!(x.sqrt()))
    });
    registry.register("math.pow", |call: &Call| {
        call.expect_arity(&["x", "y"])?;
        let value = call.f64_arg(0, "x")?.powf(call.f64_arg(1, "y")?);
        if !value.is_finite() {
            return Err(TaskError::failed(
                "math range error: the result is not a finite number",
            ));
        }
        Ok(json!(value))
    });
    registry.register("time.sleep", |call: &Call| {
        call.expect_arity(&["seconds"])?;
        let seconds = call.f64_arg(0, "seconds")?;
        let duration = Duration::try_from_secs_f64(seconds).map_err(|_| {
            TaskError::bad_arguments(format!("time.sleep: {seconds} is not a number of seconds"))
        })?;
        std::thread::sleep(duration);
        Ok(Value::Null)
    });
    registry.register("q8s.noop", |_: &Call| Ok(Value::Null));
    registry.register("q8s.echo", |call: &Call| Ok(echo(call)));
    registry.register("q8s.fail", |call: &Call| {
        let message = call
            .arg(0, "message")
            .and_then(Value::as_str)
            .unwrap_or("q8s.fail was called");
        Err(TaskError::failed(message))
    });
    registry.register("q8s.alloc", |call: &Call| {
        let mib = call.f64_arg(0, "mib")?;
        if !(0.0..=MAX_ALLOC_MIB as f64).contains(&mib) {
            return Err(TaskError::bad_arguments(format!(
                "q8s.alloc: mib must be between 0 and {MAX_ALLOC_MIB}"
            )));
        }
        let block = vec![1u8; (mib * 1024.0 * 1024.0) as usize];
        HELD.lock()
            .map_err(|_| TaskError::failed("q8s.alloc: memory holder poisoned"))?
            .push(block);
        Ok(json!(mib))
    });
}

/// One argument and no keywords: that argument. Otherwise the arguments as an
/// array, or `{"args": …, "kwargs": …}` when there are keywords.
fn echo(call: &Call) -> Value {
    match (call.args, call.kwargs.is_empty()) {
        ([single], true) => single.clone(),
        (args, true) => Value::Array(args.to_vec()),
        (args, false) => json!({ "args": args, "kwargs": call.kwargs }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn run(func: &str, args: Vec<Value>) -> Result<Value, TaskError> {
        let mut registry = Registry::empty();
        register(&mut registry);
        let kwargs = Map::new();
        registry.call(&Call {
            func,
            args: &args,
            kwargs: &kwargs,
            timeout: None,
        })
    }

    #[test]
    fn seed_examples_give_python_results() {
        assert_eq!(
            run("math.copysign", vec![json!(2), json!(-2)]),
            Ok(json!(-2.0))
        );
        assert_eq!(run("math.modf", vec![json!(2.5)]), Ok(json!([0.5, 2.0])));
        assert_eq!(run("math.hypot", vec![json!(3), json!(4)]), Ok(json!(5.0)));
        assert_eq!(run("math.sqrt", vec![json!(9)]), Ok(json!(3.0)));
        assert_eq!(
            run("math.pow", vec![json!(2), json!(10)]),
            Ok(json!(1024.0))
        );
    }

    #[test]
    fn wrong_arguments_say_what_the_function_takes() {
        let error = run("math.copysign", vec![json!(2)]).expect_err("one argument");
        assert_eq!(
            error.message,
            "math.copysign takes 2 argument(s) (x, y), got 1"
        );
        let error = run("math.sqrt", vec![json!("nine")]).expect_err("a string");
        assert!(error.message.contains("must be a number"));
        assert!(run("math.sqrt", vec![json!(-1)]).is_err());
    }

    #[test]
    fn echo_returns_its_argument_and_fail_fails() {
        assert_eq!(run("q8s.echo", vec![json!({"a": 1})]), Ok(json!({"a": 1})));
        assert_eq!(run("q8s.echo", vec![json!(1), json!(2)]), Ok(json!([1, 2])));
        assert_eq!(run("q8s.noop", vec![json!(1)]), Ok(Value::Null));
        let error = run("q8s.fail", vec![json!("on purpose")]).expect_err("fails");
        assert_eq!(error.message, "on purpose");
    }
}
