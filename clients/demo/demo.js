// The live demo served by ws-ingress at `/`: simulated vehicles publish their speed, the page subscribes to every
// car and shows the latest speed, seq and epoch, sends notifications, and shows the connection and recovery
// status. Query parameters: `?cars=N` (default 5), `?servers=ws://a/,ws://b/` (default: this page's server).
import { SwitchyardClient } from "/switchyard.js";

const params = new URLSearchParams(location.search);
const carCount = Math.min(Math.max(parseInt(params.get("cars") ?? "5", 10) || 5, 1), 50);
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const servers = (params.get("servers") ?? `${scheme}//${location.host}/`).split(",").filter(Boolean);
const cars = Array.from({ length: carCount }, (_, i) => `car${i + 1}`);
const PUBLISH_INTERVAL_MS = 1000;

const $ = id => document.getElementById(id);
const counters = { published: 0, confirmed: 0, failed: 0, received: 0 };
const client = new SwitchyardClient({ servers, reconnect: { minDelayMs: 250, maxDelayMs: 5000 } });

function bump(name) {
    counters[name] += 1;
    $(name).textContent = counters[name];
}

function logEvent(text) {
    const item = document.createElement("li");
    item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
    $("events").prepend(item);
    while ($("events").children.length > 50) $("events").lastChild.remove();
}

// --- the table of cars ------------------------------------------------------------------------------------

const rows = new Map();
for (const car of cars) {
    const row = document.createElement("tr");
    row.dataset.car = car;
    row.innerHTML = `<td>${car}</td><td class="speed">–</td><td style="width:25%"><div class="bar" style="width:0"></div>` +
        `</td><td class="seq">–</td><td class="epoch">–</td><td class="type">waiting for data</td><td class="ack">–</td>`;
    $("vehicles").append(row);
    rows.set(car, row);
    const option = document.createElement("option");
    option.value = option.textContent = car;
    $("notify-car").append(option);
}

function showSpeed(message) {
    const car = message.subject.split("/")[2];
    const row = rows.get(car);
    if (!row) return;
    const speed = Number(message.content);
    row.querySelector(".speed").textContent = message.content;
    row.querySelector(".bar").style.width = `${Math.min(Math.max(speed, 0), 200) / 2}%`;
    row.querySelector(".seq").textContent = message.seq;
    row.querySelector(".epoch").textContent = message.epoch;
    row.querySelector(".type").textContent = message.type;
    bump("received");
}

client.subscribe(cars.map(car => `/vehicles/${car}/speed`), showSpeed, { history: 1 });

// --- notifications ----------------------------------------------------------------------------------------

client.subscribe(cars.map(car => `/notifications/${car}`), message => {
    const item = document.createElement("li");
    const text = typeof message.content === "string" ? message.content : `${message.content.length} bytes`;
    item.textContent = `${message.subject} #${message.seq}: ${text}`;
    $("notifications").prepend(item);
    while ($("notifications").children.length > 20) $("notifications").lastChild.remove();
});

$("notify").addEventListener("submit", async event => {
    event.preventDefault();
    const car = $("notify-car").value;
    const text = $("notify-text").value.trim();
    if (!text) return;
    $("notify-result").textContent = `sending to /notifications/${car}…`;
    try {
        await client.publish(`/notifications/${car}`, text);
        $("notify-result").textContent = `sent to /notifications/${car}: OK`;
        $("notify-text").value = "";
    } catch (error) {
        $("notify-result").textContent = `not sent: ${error.status ?? error}`;
    }
});

// --- connection and recovery status -----------------------------------------------------------------------

client.onStatus(event => {
    if (event.status === "CONNECTED" || event.status === "DISCONNECTED") {
        $("connection").textContent = event.status;
        $("connection").className = event.status;
        $("server").textContent = event.server ?? client.server;
    }
    if (event.status === "SUBSCRIBE_ALLOW") return;  // one per subject and connection: too chatty to list
    const details = [event.subject, event.code, event.reason].filter(x => x !== undefined && x !== "");
    logEvent(`${event.status}${details.length ? " " + details.join(" ") : ""}`);
});

// --- the simulated vehicles -------------------------------------------------------------------------------

const speeds = new Map(cars.map(car => [car, 40 + Math.floor(Math.random() * 60)]));

async function drive(car) {
    const speed = Math.min(Math.max(speeds.get(car) + Math.floor(Math.random() * 11) - 5, 0), 180);
    speeds.set(car, speed);
    const ack = rows.get(car).querySelector(".ack");
    bump("published");
    try {
        await client.publish(`/vehicles/${car}/speed`, String(speed));
        bump("confirmed");
        ack.textContent = `OK (${speed})`;
    } catch (error) {
        bump("failed");
        ack.textContent = `${error.status ?? error}`;
    }
}

function driveAll() {
    if ($("simulate").checked) for (const car of cars) drive(car);
}
driveAll();
setInterval(driveAll, PUBLISH_INTERVAL_MS);

// For the browser tests and the curious: the client and the counters from the developer console.
window.switchyardDemo = { client, counters, cars };
