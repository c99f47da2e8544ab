//! Route parsing: every route, its parameters, and what is refused.

use super::*;

fn route(method: Method, target: &str) -> Result<Route, u16> {
    parse(method, target).map_err(|e| e.status)
}

#[test]
fn parses_every_route() {
    use Method::*;
    assert_eq!(route(Post, "/api/v1/tasks"), Ok(Route::Submit));
    assert_eq!(route(Post, "/api/v1/tasks/"), Ok(Route::Submit));
    assert_eq!(route(Post, "/api/v1/tasks/batch"), Ok(Route::SubmitBatch));
    assert_eq!(route(Get, "/api/v1/tasks/7"), Ok(Route::Get(TaskId(7))));
    assert_eq!(
        route(Delete, "/api/v1/tasks/7"),
        Ok(Route::Cancel(TaskId(7)))
    );
    assert_eq!(
        route(Post, "/api/v1/tasks/7/cancel"),
        Ok(Route::Cancel(TaskId(7)))
    );
    assert_eq!(
        route(Post, "/api/v1/tasks/7/retry"),
        Ok(Route::Retry {
            id: TaskId(7),
            cascade: false
        })
    );
    assert_eq!(
        route(Post, "/api/v1/tasks/7/retry?cascade=true"),
        Ok(Route::Retry {
            id: TaskId(7),
            cascade: true
        })
    );
    assert_eq!(
        route(Post, "/api/v1/pause?stop_running=true"),
        Ok(Route::Pause { stop_running: true })
    );
    assert!(route(Post, "/api/v1/pause?stop_running=yes").is_err());
    assert_eq!(
        route(Post, "/api/v1/tasks/7/hold"),
        Ok(Route::Hold(TaskId(7)))
    );
    assert_eq!(
        route(Post, "/api/v1/tasks/7/release"),
        Ok(Route::Release(TaskId(7)))
    );
    assert_eq!(
        route(Get, "/api/v1/tasks/7/wait"),
        Ok(Route::Wait(TaskId(7), 30.0))
    );
    assert_eq!(
        route(Get, "/api/v1/tasks/7/wait?timeout_s=1.5"),
        Ok(Route::Wait(TaskId(7), 1.5))
    );
    assert_eq!(
        route(Post, "/api/v1/tasks/wait?timeout_s=2"),
        Ok(Route::WaitMany(2.0))
    );
    assert_eq!(route(Post, "/api/v1/tasks/run"), Ok(Route::Run(30.0)));
    assert_eq!(route(Get, "/api/v1/tasks/run"), Err(405));
    assert_eq!(route(Post, "/api/v1/tasks/run?timeout_s=-1"), Err(400));
    assert_eq!(route(Get, "/api/v1/monitoring"), Ok(Route::Monitoring));
    assert_eq!(route(Get, "/api/v1/queues"), Ok(Route::Queues));
    assert_eq!(
        route(Get, "/api/v1/queues/train"),
        Ok(Route::Queue("train".into()))
    );
    assert_eq!(
        route(Method::Patch, "/api/v1/queues/gpu%2Dheavy"),
        Ok(Route::SetQueue("gpu-heavy".into()))
    );
    assert_eq!(route(Post, "/api/v1/queues/train"), Err(405));
    assert_eq!(
        route(Get, "/api/v1/monitoring/history"),
        Ok(Route::History(60))
    );
    assert_eq!(
        route(Get, "/api/v1/monitoring/history?minutes=5"),
        Ok(Route::History(5))
    );
    assert_eq!(route(Get, "/api/v1/monitoring/history?minutes=0"), Err(400));
    assert_eq!(
        route(Get, "/api/v1/monitoring/history?minutes=61"),
        Err(400)
    );
    assert_eq!(route(Get, "/api/v1/workers"), Ok(Route::Workers));
    assert_eq!(route(Get, "/api/v1/report"), Ok(Route::Report));
    assert_eq!(route(Get, "/api/v1/task-types"), Ok(Route::TaskTypes));
    assert_eq!(route(Get, "/healthz"), Ok(Route::Health));
    assert_eq!(route(Get, "/metrics"), Ok(Route::Metrics));
    assert_eq!(route(Post, "/submit_task"), Ok(Route::LegacySubmit));
    assert_eq!(
        route(Get, "/task_status/12"),
        Ok(Route::LegacyStatus("12".into()))
    );
    assert_eq!(route(Get, "/monitoring_data"), Ok(Route::LegacyMonitoring));
    assert_eq!(route(Get, "/get_tasks"), Ok(Route::LegacyTasks));
    assert_eq!(
        route(Delete, "/remove_task/3"),
        Ok(Route::LegacyRemove("3".into()))
    );
}

#[test]
fn list_parameters_are_decoded_and_checked() {
    let parsed = route(
        Method::Get,
        "/api/v1/tasks?status=failed&task=mock%20ml&limit=5&offset=10&order=oldest",
    );
    assert_eq!(
        parsed,
        Ok(Route::List(ListParams {
            status: Some(TaskStatus::Failed),
            task: Some("mock ml".into()),
            limit: 5,
            offset: 10,
            order: Order::Oldest,
            sort: TaskSort::Id,
        }))
    );
    let sorted = |query: &str| match route(Method::Get, &format!("/api/v1/tasks?{query}")) {
        Ok(Route::List(params)) => Some((params.sort, params.order)),
        _ => None,
    };
    assert_eq!(
        sorted("sort=duration&order=desc"),
        Some((TaskSort::Duration, Order::Newest))
    );
    assert_eq!(
        sorted("sort=priority&order=asc"),
        Some((TaskSort::Priority, Order::Oldest))
    );
    assert_eq!(sorted("sort=task"), Some((TaskSort::Task, Order::Newest)));
    assert_eq!(
        sorted("sort=status"),
        Some((TaskSort::Status, Order::Newest))
    );
    assert_eq!(
        sorted("sort=id&order=oldest"),
        Some((TaskSort::Id, Order::Oldest))
    );
    for bad in [
        "status=done",
        "limit=0",
        "limit=5000",
        "offset=-1",
        "order=random",
        "task=%zz",
        "sort=colour",
        "sort=",
    ] {
        assert_eq!(
            route(Method::Get, &format!("/api/v1/tasks?{bad}")),
            Err(400),
            "{bad}"
        );
    }
}

#[test]
fn unknown_paths_wrong_methods_and_bad_ids_are_told_apart() {
    assert_eq!(route(Method::Get, "/nope"), Err(404));
    assert_eq!(route(Method::Get, "/api/v2/tasks"), Err(404));
    assert_eq!(route(Method::Put, "/api/v1/tasks"), Err(405));
    assert_eq!(route(Method::Get, "/api/v1/tasks/batch"), Err(405));
    assert_eq!(route(Method::Get, "/api/v1/tasks/abc"), Err(400));
    assert_eq!(route(Method::Post, "/api/v1/tasks/1"), Err(405));
    assert_eq!(
        route(Method::Get, "/api/v1/tasks/1/wait?timeout_s=301"),
        Err(400)
    );
    assert_eq!(
        route(Method::Get, "/api/v1/tasks/1/wait?timeout_s=nan"),
        Err(400)
    );
    assert!(Route::Health.is_public() && !Route::Metrics.is_public());
}

#[test]
fn the_dashboard_files_are_the_only_public_routes_besides_health() {
    use Method::*;
    let page = route(Get, "/").expect("the page");
    assert!(matches!(page, Route::Asset(asset) if asset.path == "/"));
    assert!(page.is_public());
    let script = route(Get, "/web/app.js?v=1").expect("a script");
    assert!(matches!(script, Route::Asset(asset) if asset.path == "/web/app.js"));
    assert!(script.is_public());
    assert_eq!(route(Post, "/"), Err(405));
    assert_eq!(route(Delete, "/web/app.js"), Err(405));
    assert_eq!(route(Get, "/web/secret"), Err(404));
    assert_eq!(route(Get, "/web/../api/v1/tasks"), Err(404));
    assert_eq!(route(Get, "/web"), Err(404));
    assert_eq!(
        route(Post, "/api/v1/tasks/example"),
        Ok(Route::SubmitExample)
    );
    for target in [
        "/api/v1/tasks",
        "/api/v1/tasks/1",
        "/api/v1/tasks/1/log",
        "/api/v1/events",
        "/api/v1/monitoring",
        "/api/v1/monitoring/history",
        "/api/v1/workers",
        "/api/v1/queues",
        "/api/v1/task-types",
        "/api/v1/report",
        "/metrics",
        "/get_tasks",
        "/monitoring_data",
    ] {
        let parsed = route(Get, target).expect(target);
        assert!(!parsed.is_public(), "{target} must need the secret");
    }
    assert!(!Route::SubmitExample.is_public());
}
