"""The midjourney-proxy API (novicezk / trueai / mj-plus, as relays such as new-api expose it), for
clients written against it: the third source document's `/mj` section. Authority for the shapes:
../shared/upstreams/midjourney-proxy.md.

  POST /mj/submit/imagine        {"prompt", "base64Array"?: [data URL], "base64"?, "botType"?,
                                  "notifyHook"?, "state"?}
  POST /mj/submit/blend          {"base64Array": [2-5 data URLs], "dimensions"?}
  POST /mj/submit/describe       {"base64"} | {"link"}
  POST /mj/submit/change         {"taskId", "action": UPSCALE|VARIATION|REROLL, "index"?}
  POST /mj/submit/simple-change  {"content": "<taskId> U1" | "<taskId> V2" | "<taskId> R"}
  POST /mj/submit/action         {"taskId", "customId"}        (a button of the task)
  POST /mj/submit/modal          {"taskId", "prompt"?, "maskBase64"?}   (a task in status MODAL)
      -> HTTP 200 {"code", "description", "result": <task id>, "properties"}: 1 submitted,
         21 exists (the existing task) or waits for a modal, 22 queued, 23 queue full,
         24 banned prompt, 3 no such task, 4 invalid request, 9 any other failure
  GET  /mj/task/{id}/fetch               the task {id, action, status, progress, imageUrl, ...};
                                          404 with code 3 for an unknown id (also below)
  GET  /mj/task/{id}/image-seed          {"code": 1, "description": "成功", "result": "<seed>"},
                                          asked of the channel that made the image
  POST /mj/task/{id}/cancel              {"code": 1, ...}: the task is CANCEL and refunded; code 4
                                          when it had finished
  POST /mj/task/list-by-condition {"ids"} the caller's tasks among them, in that order
  GET  /mj/task/list, /mj/task/queue     the caller's newest 100 tasks of this API (queue: unfinished)

Every route is also served under the speed-mode prefixes `/mj-fast/mj`, `/mj-turbo/mj` and
`/mj-relax/mj` (new-api's `/:mode/mj`; the plain `/mj` is fast). A prompt's --fast / --turbo /
--relax flag sets the mode under the plain `/mj`. The mode goes upstream as the proxy's own prefix
and is the task's `mode`, priced as the `speed` dimension.

Every submit is a gateway task (services.tasks): ids are the gateway's, the poller follows the
upstream job, images (also the preview while running) are stored and served by the gateway, and
the client's notifyHook gets the task at each change of status and progress. Follow-ups name the
gateway's task; the upstream gets its own task id, on the channel that holds it. Prompt flags are
checked before anything is sent upstream (on every API: Midjourney's Capabilities.check_prompt).
Unknown JSON fields are ignored, as the proxies do.

The package: `wire` (the bodies, the task as the proxy shows it, result codes), `submit` (the
/submit/* routes and the follow-ups the console's buttons make too) and `tasks` (fetch, list,
queue, cancel, image-seed).
"""

from __future__ import annotations

from fastapi import APIRouter

from pixelgate.surfaces.midjourney import submit, tasks
from pixelgate.surfaces.midjourney.submit import button_request, follow_up_request, parent_task
from pixelgate.surfaces.midjourney.wire import PROVIDER, render_error, render_task

__all__ = ["PROVIDER", "button_request", "follow_up_request", "parent_task", "render_error", "render_task", "router"]

router = APIRouter()
for routes in (submit.router, tasks.router):  # every route also under /mj-fast, /mj-turbo and /mj-relax
    router.include_router(routes)
    router.include_router(routes, prefix="/{mode}", include_in_schema=False)
