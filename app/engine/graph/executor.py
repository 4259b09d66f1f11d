"""GRAPH mode (SPEC §21): walk an agent's graph from START to END, streamed as a plan.

The run:

1. reads its inputs (the query's ``params``, checked against ``graph.inputs``: a missing
   required input or a value of the wrong type ends the run with ``run.error``) and builds
   the initial state (``initial`` of each declared key, else null);
2. emits ``plan.create`` + ``plan.update`` listing every node as a task (``taskId`` = node
   name, ``description`` = the node's, else one made from its kind) and writes the START
   checkpoint;
3. visits nodes: ``task.start`` → the node's own events (all carrying its ``taskId``) →
   ``plan.update`` + ``task.complete`` (or ``task.fail``); then ``output``/``outputs`` and
   ``update`` change the state, the first matching outgoing edge (file order) picks the next
   node and the node's checkpoint is written. A second visit of a node is a new task
   ``name#2`` (appended to the plan with a ``plan.update`` before its ``task.start``);
4. at a node whose edges are ``parallel`` runs every target as a branch, concurrently, each on
   its own copy of the state, until the branches meet at the join node; the keys a branch
   changed are merged back in edge order (a later branch wins) and a ``joined`` checkpoint is
   written;
5. at END marks the tasks of nodes it never visited ``canceled`` (one ``plan.update``), then
   streams the ``answer`` template as one content block outside any task (without
   ``answer`` the answer is the text of the last ``llm``/``agent`` node, already streamed).

A failing node (a tool's error result, an upstream error, an answer that is not JSON, an
``update`` that cannot be computed…) gets ``task.fail``; when ``optional`` the graph goes on
along its edges with the state unchanged, otherwise the run ends with ``run.error``
``graph_node_failed``. Budgets and cancellation are never swallowed. No matching edge:
``run.error`` ``graph_no_route``. More than ``maxSteps`` node visits: the run completes with
``finishReason: "max_steps"``. Checkpoints: ``app.engine.graph.checkpoints``.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass
from typing import Any

import orjson

from app.catalog.definitions import GRAPH_END, GRAPH_START, GraphDefinition, GraphField, GraphNode
from app.catalog.expressions import ExpressionError, as_text
from app.contract import events as ev
from app.contract.events import now_ms
from app.engine.context import Plan, PlanTask, RunContext
from app.engine.graph.checkpoints import GraphResume, fork_refusal, write_checkpoint
from app.engine.graph.context import NodeContext
from app.engine.graph.nodes import NodeFailed, NodeResult, run_node
from app.engine.ids import msg_id, plan_id
from app.errors import BudgetExceeded, GatewayError, RunFailed, ToolError, UpstreamError
from app.memory.fork import pending_resume
from app.memory.lines import LINE_QUERY

#: failures that are the node's own: an optional node is skipped past them
_NODE_FAILURES = (NodeFailed, UpstreamError, ToolError, ExpressionError)
_SETTLED = {"completed": ev.TaskComplete, "canceled": ev.TaskCancel}
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "object": (dict,),
    "array": (list,),
}


@dataclass(frozen=True, slots=True)
class Route:
    """Where the graph goes after ``source``: one target, or parallel ``targets`` meeting at ``join``."""

    source: str
    targets: tuple[str, ...]
    join: str | None = None


class _StepsExhausted(Exception):
    """``maxSteps`` node visits happened; the run ends with ``max_steps``."""


async def run_graph(ctx: RunContext, resume: GraphResume | None = None) -> str:
    """Returns the finish reason: ``stop`` or ``max_steps``. ``resume`` starts at a checkpoint (SPEC §20)."""
    graph = ctx.agent.graph
    assert graph is not None, "a GRAPH agent always has a graph"
    return await GraphRun(ctx, graph).run(resume)


def _error_body(error: BaseException) -> dict[str, Any]:
    if isinstance(error, NodeFailed):
        return {"code": error.code, "message": error.message}
    if isinstance(error, BudgetExceeded):
        return {"code": f"budget_{error.budget}", "message": error.message}
    if isinstance(error, GatewayError):
        return {"code": getattr(error, "error_code", None) or "internal_error", "message": error.message}
    if isinstance(error, ExpressionError):
        return {"code": "graph_expression_failed", "message": error.message}
    if isinstance(error, TimeoutError):
        return {"code": "budget_run_timeout", "message": "the run ran out of time"}
    return {"code": "internal_error", "message": "internal error in the run engine"}


def _first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The error a failed fan-out reports: the first that is not the cancellation of a sibling."""
    flat: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        item = stack.pop(0)
        if isinstance(item, BaseExceptionGroup):
            stack[:0] = list(item.exceptions)
        else:
            flat.append(item)
    return next((e for e in flat if not isinstance(e, asyncio.CancelledError)), flat[0])


class GraphRun:
    """One walk through a graph (see the module docstring). Lives for one run."""

    def __init__(self, ctx: RunContext, graph: GraphDefinition) -> None:
        self.ctx = ctx
        self.graph = graph
        self.inputs: dict[str, Any] = {}
        self.message = ""
        self.visits: dict[str, int] = {}
        self.steps = 0
        #: the answer of the last llm/agent node (the run's answer when the graph has no ``answer``)
        self.last_text = ""

    # ---- the walk ------------------------------------------------------------------------

    async def run(self, resume: GraphResume | None) -> str:
        ctx, graph = self.ctx, self.graph
        ctx.stage = "graph"
        query = await self._query()
        resume = resume or await self._forked_resume()
        params = query.get("params")
        if resume is not None:  # SPEC §20: the forked run's inputs stand in for the query's params
            params = {**(params if isinstance(params, dict) else {}), **resume.inputs}
        self.message = str(query.get("message") or self._first_user_text())
        self.inputs = self._inputs(params)
        state = {item.name: copy.deepcopy(item.default) for item in graph.state}
        if resume is not None:
            self.inputs = {**self.inputs, **resume.inputs}
            self.message = resume.message if resume.message is not None else self.message
            state.update(copy.deepcopy(dict(resume.state)))
        ctx.plan = Plan(plan_id(), [PlanTask(name, node.description) for name, node in graph.nodes.items()])
        self._publish_plan(created=True)
        route = Route(GRAPH_START, (resume.node,)) if resume is not None else self._route(GRAPH_START, state)
        start_fields: dict[str, Any] = {"node": GRAPH_START, "status": "started", "state": state,
                                        "next": list(route.targets), "inputs": self.inputs, "message": self.message}
        if resume is not None:
            start_fields["resumedAt"] = resume.node
        await write_checkpoint(ctx, start_fields, messages=ctx.pending)
        ctx.pending.clear()
        try:
            await self._run_from(route, state, stop=None)
        except _StepsExhausted:
            ctx.final_text = self.last_text
            return "max_steps"
        self._close_plan()
        await self._answer(state)
        return "stop"

    async def _run_from(self, route: Route, state: dict[str, Any], stop: str | None) -> None:
        """Follow the graph from ``route`` until END (or ``stop``, where parallel branches meet)."""
        while True:
            if route.join is not None:
                await self._fan_out(route, state)
                target = route.join
            else:
                (target,) = route.targets
            if target == GRAPH_END or target == stop:
                return
            route = await self._visit(target, state)

    async def _fan_out(self, route: Route, state: dict[str, Any]) -> None:
        assert route.join is not None
        base = copy.deepcopy(state)
        branches = [copy.deepcopy(state) for _ in route.targets]
        try:
            async with asyncio.TaskGroup() as group:
                for target, branch in zip(route.targets, branches, strict=True):
                    group.create_task(self._branch(target, branch, route.join), name=f"graph:{target}")
        except BaseExceptionGroup as failed:
            raise _first_error(failed) from None
        for branch in branches:
            for key, value in branch.items():
                if key not in base or base[key] != value:
                    state[key] = value
        await write_checkpoint(self.ctx, {"node": route.source, "status": "joined", "state": state,
                                          "next": [route.join]})

    async def _branch(self, target: str, state: dict[str, Any], join: str) -> None:
        route = await self._visit(target, state)
        await self._run_from(route, state, stop=join)

    async def _visit(self, name: str, state: dict[str, Any]) -> Route:
        """Run one visit of node ``name``, update ``state``, write its checkpoint; returns where to go next."""
        if self.steps >= self.graph.max_steps:
            raise _StepsExhausted
        self.steps += 1
        ctx, node = self.ctx, self.graph.nodes[name]
        visit = self.visits[name] = self.visits.get(name, 0) + 1
        task_id = name if visit == 1 else f"{name}#{visit}"
        assert ctx.plan is not None
        task = ctx.plan.find(task_id)
        if task is None:
            task = PlanTask(task_id, node.description)
            ctx.plan.tasks.append(task)
            self._publish_plan(created=False)
        ctx.emit(ev.TaskStart(task_id=task_id, run_id=ctx.run_id, description=task.description))
        node_ctx = NodeContext(ctx, task_id=task_id)
        result = NodeResult()
        status = "completed"
        try:
            result = await run_node(node_ctx, node, self._scope(state))
            changed = self._apply(node, result, state)
        except _NODE_FAILURES as failure:
            error = _error_body(failure)
            self._settle(task, "failed", error)
            if not node.optional:
                await self._checkpoint(node_ctx, name, visit, "failed", state, [], error=error)
                raise RunFailed(f"graph node '{name}' failed: {error['message']}",
                                error_code="graph_node_failed") from None
            status = "failed"
        except asyncio.CancelledError:
            self._settle(task, "canceled")
            ctx.pending.extend(node_ctx.pending)  # the run's own last step records them
            raise
        except BaseException as exc:  # budgets, limits, the run's deadline, bugs: the run ends
            self._settle(task, "failed", _error_body(exc))
            ctx.pending.extend(node_ctx.pending)
            raise
        else:
            state.clear()
            state.update(changed)
            if result.text is not None:
                self.last_text = result.text
            self._settle(task, "completed")
        try:
            route = self._route(name, state)
        except RunFailed:
            await self._checkpoint(node_ctx, name, visit, status, state, [], system=result.system)
            raise
        await self._checkpoint(node_ctx, name, visit, status, state, list(route.targets), system=result.system)
        return route

    # ---- state, routes, answer -----------------------------------------------------------

    def _scope(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"inputs": self.inputs, "state": state, "message": self.message}

    def _apply(self, node: GraphNode, result: NodeResult, state: dict[str, Any]) -> dict[str, Any]:
        """The state after the node: ``output``, then ``outputs`` (JMESPath over the result), then
        ``update`` (expressions over the state with those applied). Nothing changes on a failure."""
        changed = dict(state)
        if node.output is not None:
            changed[node.output] = result.value
        readable = _readable(result.value) if node.outputs else result.value
        for key, query in node.outputs:
            changed[key] = query.search(readable)
        scope = self._scope(changed)
        values = {key: expression.evaluate(scope) for key, expression in node.update}
        changed.update(values)
        return changed

    def _route(self, source: str, state: dict[str, Any]) -> Route:
        edges = self.graph.edges_from(source)
        if edges and edges[0].parallel:
            targets = tuple(edge.target for edge in edges)
            return Route(source, targets, self.graph.joins.get(source)) if len(targets) > 1 else Route(source, targets)
        scope = self._scope(state)
        tried: list[str] = []
        for edge in edges:
            if edge.condition is None:
                return Route(source, (edge.target,))
            try:
                if edge.condition.test(scope):
                    return Route(source, (edge.target,))
                tried.append(f"'{edge.condition.source}' is false")
            except ExpressionError as exc:
                tried.append(f"'{edge.condition.source}' could not be evaluated ({exc.message})")
        label = "START" if source == GRAPH_START else f"node '{source}'"
        raise RunFailed(f"no edge out of {label} matched: {'; '.join(tried)}", error_code="graph_no_route")

    async def _answer(self, state: dict[str, Any]) -> None:
        ctx = self.ctx
        messages: list[dict[str, Any]] = []
        if self.graph.answer is None:
            ctx.final_text = self.last_text
        else:
            try:
                text = as_text(self.graph.answer.render(self._scope(state)))
            except ExpressionError as exc:
                raise RunFailed(f"the graph's answer could not be rendered: {exc.message}",
                                error_code="graph_answer_failed") from None
            content_id = ctx.next_content_id()
            ctx.emit(ev.ContentStart(content_id=content_id, run_id=ctx.run_id))
            if text:
                ctx.emit(ev.ContentDeltaEvent(content_id=content_id, delta=text))
            ctx.emit(ev.ContentEnd(content_id=content_id))
            messages.append({"role": "assistant", "content": [{"type": "text", "text": text}],
                             "_contentId": content_id, "_msgId": msg_id(), "ts": now_ms()})
            ctx.messages.extend(messages)
            ctx.final_text = text
        await write_checkpoint(ctx, {"node": GRAPH_END, "status": "ended", "state": state, "next": []},
                               messages=messages)

    # ---- plan and tasks --------------------------------------------------------------------

    def _publish_plan(self, created: bool) -> None:
        """SPEC §5/§21: ``plan.create`` is followed at once by ``plan.update``; later changes are ``plan.update``."""
        ctx = self.ctx
        assert ctx.plan is not None
        if created:
            ctx.emit(ev.PlanCreate(plan_id=ctx.plan.plan_id, chat_id=ctx.chat_id, plan=ctx.plan.as_list()))
        ctx.emit(ev.PlanUpdate(plan_id=ctx.plan.plan_id, chat_id=ctx.chat_id, plan=ctx.plan.as_list()))
        ctx.plan_dirty = True

    def _settle(self, task: PlanTask, status: str, error: dict[str, Any] | None = None) -> None:
        ctx = self.ctx
        task.status = status
        self._publish_plan(created=False)
        if status == "failed":
            ctx.emit(ev.TaskFail(task_id=task.task_id, run_id=ctx.run_id, description=task.description, error=error))
        else:
            ctx.emit(_SETTLED[status](task_id=task.task_id, run_id=ctx.run_id, description=task.description))

    def _close_plan(self) -> None:
        """The tasks of nodes this run never visited are ``canceled``, so the plan shows the path taken."""
        assert self.ctx.plan is not None
        skipped = [task for task in self.ctx.plan.tasks if task.status == "init" and task.task_id not in self.visits]
        for task in skipped:
            task.status = "canceled"
        if skipped:
            self._publish_plan(created=False)

    async def _checkpoint(self, node_ctx: NodeContext, name: str, visit: int, status: str, state: dict[str, Any],
                          following: list[str], *, system: str | None = None,
                          error: dict[str, Any] | None = None) -> None:
        fields: dict[str, Any] = {"node": name, "visit": visit, "status": status, "state": state, "next": following}
        if error is not None:
            fields["error"] = error
        await write_checkpoint(self.ctx, fields, messages=node_ctx.pending, task_id=node_ctx.task_id, system=system)
        node_ctx.pending.clear()

    # ---- the query -----------------------------------------------------------------------

    async def _query(self) -> dict[str, Any]:
        """This run's query (its ``params`` are the graph's inputs), from the chat's query line."""
        ctx = self.ctx
        lines = await asyncio.to_thread(ctx.services.chats.read_lines, ctx.chat_id)
        for line in reversed(lines):
            query = line.get("query")
            if line.get("_type") == LINE_QUERY and line.get("runId") == ctx.run_id and isinstance(query, dict):
                return query
        return {}

    async def _forked_resume(self) -> GraphResume | None:
        """SPEC §20: the node checkpoint a fork from a node left for the chat's next run (``app.memory.fork``)."""
        lines = await asyncio.to_thread(self.ctx.services.chats.read_lines, self.ctx.chat_id)
        found = pending_resume(lines)
        if found is None:
            return None
        agent_key = found.get("agentKey")
        if agent_key is None:  # a fork line written before forks named their agent
            if found.get("node") not in self.graph.nodes:
                return None
        elif agent_key != self.ctx.agent.key:
            return None  # the restart is for the forked run's agent only
        else:
            refusal = fork_refusal(self.graph, str(found.get("node")))
            if refusal is not None:  # the agent changed since the fork (hot reload)
                raise RunFailed(f"cannot restart at the fork's node: {refusal}", error_code="graph_fork_invalid")
        state, inputs, message = found.get("state"), found.get("inputs"), found.get("message")
        return GraphResume(node=str(found["node"]), state=state if isinstance(state, dict) else {},
                           inputs=inputs if isinstance(inputs, dict) else {},
                           message=message if isinstance(message, str) else None)

    def _first_user_text(self) -> str:
        for message in self.ctx.messages:
            if message.get("role") == "user":
                return "".join(part.get("text", "") for part in message.get("content") or [] if isinstance(part, dict))
        return ""

    def _inputs(self, params: Any) -> dict[str, Any]:
        given: dict[str, Any] = dict(params) if isinstance(params, dict) else {}
        for item in self.graph.inputs:
            value = given.get(item.name)
            if value is None:
                if item.default is not None:
                    given[item.name] = copy.deepcopy(item.default)
                elif item.required:
                    raise RunFailed(f"the graph needs the input '{item.name}' (the query's params.{item.name})",
                                    error_code="graph_input_missing")
                else:
                    given[item.name] = None
            elif not _type_ok(value, item):
                raise RunFailed(f"the input '{item.name}' must be of type {item.type}, "
                                f"got {type(value).__name__}", error_code="graph_input_invalid")
        return given


def _type_ok(value: Any, item: GraphField) -> bool:
    wanted = _TYPES.get(item.type)
    if wanted is None:
        return True
    if isinstance(value, bool) and bool not in wanted:
        return False
    return isinstance(value, wanted)


def _readable(value: Any) -> Any:
    """A string result that holds JSON is read as that JSON by ``outputs``; any other value as it is."""
    if not isinstance(value, str):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


__all__ = ["GraphRun", "Route", "run_graph"]
