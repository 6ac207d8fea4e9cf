// The JavaScript client (kafkajs, the version package.json pins), driven by
// tests/e2e/test_client_matrix.py. Same commands and the same one-line JSON answer as the Java
// driver (tests/clients/java/ClientCheck.java), so that one test asserts on every client:
//
//   admin BOOTSTRAP GOOD_TOPIC BAD_TOPIC        create (3 partitions), describe, refused create, delete
//   produce BOOTSTRAP TOPIC PARTITION VALUE...  one idempotent acks=all producer, each send awaited
//   produce-spread BOOTSTRAP TOPIC N V1..VN L1..LN  value i to partition i in one send() (one
//                                               request; "nokey:..." without a key), then L1..LN
//   consume BOOTSTRAP TOPIC GROUP PROTOCOL N    a group member reads N, commits each (classic only)
//   txn BOOTSTRAP TOPIC TXN_ID                  commit 3 records, abort 3, a refused one, read_committed
//   addresses BOOTSTRAP TOPIC                   every broker and leader address the client learns
'use strict'

const net = require('net')
const { Kafka, logLevel } = require('kafkajs')

// Every address the client dials, whatever told it of the address.
const dialed = new Set()
const socketFactory = ({ host, port, onConnect }) => {
  dialed.add(`${host}:${port}`)
  const socket = net.connect({ host, port }, onConnect)
  socket.setKeepAlive(true, 30000)
  return socket
}

const kafka = bootstrap =>
  new Kafka({
    // kafkajs's own default client id ('kafkajs') unless CLIENT_ID says otherwise.
    ...(process.env.CLIENT_ID ? { clientId: process.env.CLIENT_ID } : {}),
    brokers: bootstrap.split(','),
    logLevel: logLevel.NOTHING,
    requestTimeout: 15000,
    retry: { retries: 5 },
    socketFactory,
  })

// What kafkajs shows its user for a failed send: the error class, the Kafka code name, the text.
const describe = e => ({
  ok: false,
  error: e.type || e.name,
  name: e.name,
  message: e.message,
})

const producer = (client, extra = {}) =>
  client.producer({ idempotent: true, maxInFlightRequests: 1, ...extra })

async function admin(bootstrap, good, bad) {
  const adm = kafka(bootstrap).admin()
  await adm.connect()
  const r = {}
  try {
    await adm.createTopics({ topics: [{ topic: good, numPartitions: 3, replicationFactor: 1 }] })
    r.created = true
    const md = await adm.fetchTopicMetadata({ topics: [good] })
    r.partitions = md.topics[0].partitions.length
    try {
      await adm.createTopics({ topics: [{ topic: bad, numPartitions: 3, replicationFactor: 1 }] })
      r.bad_error = null
    } catch (e) {
      const inner = (e.errors && e.errors[0]) || e
      r.bad_error = inner.type || inner.name
      r.bad_message = inner.message
    }
    await adm.deleteTopics({ topics: [good] })
    r.deleted = true
  } finally {
    await adm.disconnect()
  }
  return r
}

const key = v => (v.startsWith('nokey:') ? null : 'key')

async function produce(bootstrap, topic, partition, values) {
  const p = producer(kafka(bootstrap))
  await p.connect()
  const results = []
  try {
    for (const value of values) {
      try {
        const [m] = await p.send({ topic, acks: -1, messages: [{ partition, key: 'k', value }] })
        results.push({ ok: true, partition: m.partition, offset: Number(m.baseOffset) })
      } catch (e) {
        results.push(describe(e))
      }
    }
  } finally {
    await p.disconnect()
  }
  return { results }
}

// One send() with value i for partition i: kafkajs puts it in one request per leader and
// answers, or fails, the send as a whole.
async function sendSpread(p, topic, values) {
  try {
    const meta = await p.send({
      topic,
      acks: -1,
      messages: values.map((value, partition) => ({ partition, key: key(value), value })),
    })
    return values.map((_, i) => {
      const m = meta.find(x => x.partition === i)
      return { ok: true, partition: i, offset: Number(m.baseOffset) }
    })
  } catch (e) {
    return values.map(() => describe(e))
  }
}

async function produceSpread(bootstrap, topic, values, later) {
  const p = producer(kafka(bootstrap))
  await p.connect()
  try {
    const results = await sendSpread(p, topic, values)
    return { results, later: await sendSpread(p, topic, later) }
  } finally {
    await p.disconnect()
  }
}

async function consume(bootstrap, topic, group, n) {
  const c = kafka(bootstrap).consumer({
    groupId: group,
    sessionTimeout: 10000,
    heartbeatInterval: 1000,
  })
  await c.connect()
  await c.subscribe({ topics: [topic], fromBeginning: true })
  const values = []
  let extra = 0
  let reached
  const done = new Promise(resolve => (reached = resolve))
  await c.run({
    autoCommit: false,
    eachMessage: async ({ topic: t, partition, message }) => {
      if (values.length >= n) {
        extra += 1
        return
      }
      values.push(message.value.toString())
      await c.commitOffsets([{ topic: t, partition, offset: (BigInt(message.offset) + 1n).toString() }])
      if (values.length === n) reached()
    },
  })
  await Promise.race([done, new Promise(resolve => setTimeout(resolve, 45000))])
  // Settle: anything more than asked for would show here (it is not committed).
  await new Promise(resolve => setTimeout(resolve, 1500))
  await c.disconnect()
  return { values, extra_seen: extra }
}

const order = (id, total) => `{"order_id": "${id}", "customer_id": "c", "order_total": ${total}}`

async function txn(bootstrap, topic, txnId) {
  const client = kafka(bootstrap)
  const p = producer(client, { transactionalId: txnId })
  await p.connect()
  const r = {}
  const batch = prefix => [0, 1, 2].map(i => ({ partition: 0, key: 'k', value: order(`${prefix}-${i}`, 10) }))
  try {
    let t = await p.transaction()
    await t.send({ topic, acks: -1, messages: batch('committed') })
    await t.commit()
    t = await p.transaction()
    await t.send({ topic, acks: -1, messages: batch('aborted') })
    await t.abort()
    // A transaction with a record the contract refuses: the send fails, the producer aborts.
    t = await p.transaction()
    try {
      await t.send({
        topic,
        acks: -1,
        messages: [
          { partition: 1, key: 'k', value: order('refused-txn-good', 10) },
          { partition: 0, key: 'k', value: order('refused-txn-bad', 0) },
        ],
      })
      await t.commit()
      r.refused_commit = null
    } catch (e) {
      r.refused_commit = `${e.name}: ${e.message}`
      await t.abort()
    }
    t = await p.transaction()
    await t.send({ topic, acks: -1, messages: [{ partition: 0, key: 'k', value: order('after-0', 10) }] })
    await t.commit()
  } finally {
    await p.disconnect()
  }
  // kafkajs consumers read committed unless told readUncommitted.
  const c = client.consumer({ groupId: `txn-${txnId}` })
  await c.connect()
  await c.subscribe({ topics: [topic], fromBeginning: true })
  const values = []
  await c.run({ eachMessage: async ({ message }) => values.push(message.value.toString()) })
  const end = Date.now() + 20000
  while (values.length < 4 && Date.now() < end) await new Promise(resolve => setTimeout(resolve, 200))
  await new Promise(resolve => setTimeout(resolve, 1500))
  await c.disconnect()
  r.read_committed = values
  return r
}

async function addresses(bootstrap, topic) {
  const client = kafka(bootstrap)
  const adm = client.admin()
  await adm.connect()
  const seen = new Set()
  try {
    const cluster = await adm.describeCluster()
    const byId = new Map(cluster.brokers.map(b => [b.nodeId, `${b.host}:${b.port}`]))
    for (const a of byId.values()) seen.add(a)
    const md = await adm.fetchTopicMetadata({ topics: [topic] })
    for (const p of md.topics[0].partitions) if (byId.has(p.leader)) seen.add(byId.get(p.leader))
    // Produce to every partition, so the client dials each leader it was told of.
    const p = producer(client)
    await p.connect()
    await p.send({
      topic,
      acks: -1,
      messages: md.topics[0].partitions.map(x => ({ partition: x.partitionId, key: 'k', value: order('addresses', 10) })),
    })
    await p.disconnect()
  } finally {
    await adm.disconnect()
  }
  for (const a of dialed) seen.add(a)
  return { addresses: [...seen] }
}

async function run(a) {
  switch (a[0]) {
    case 'admin':
      return admin(a[1], a[2], a[3])
    case 'produce':
      return produce(a[1], a[2], Number(a[3]), a.slice(4))
    case 'produce-spread': {
      const n = Number(a[3])
      return produceSpread(a[1], a[2], a.slice(4, 4 + n), a.slice(4 + n, 4 + 2 * n))
    }
    case 'consume':
      return consume(a[1], a[2], a[3], Number(a[5]))
    case 'txn':
      return txn(a[1], a[2], a[3])
    case 'addresses':
      return addresses(a[1], a[2])
    default:
      throw new Error(`unknown command ${a[0]}`)
  }
}

run(process.argv.slice(2)).then(
  out => {
    console.log(JSON.stringify(out))
    process.exit(0)
  },
  e => {
    console.log(JSON.stringify({ fatal: e.name, message: e.message }))
    process.exit(1)
  },
)
