import test from 'ava';
import { Allowlist } from '../../../src/policy/index.js';

function check(title: string, cidrs: readonly string[], allowed: readonly string[], denied: readonly string[]): void {
  test(title, (t) => {
    const list = new Allowlist(cidrs);
    for (const ip of allowed) t.true(list.allows(ip), `${ip} should be allowed by ${cidrs.join(', ')}`);
    for (const ip of denied) t.false(list.allows(ip), `${ip} should be denied by ${cidrs.join(', ')}`);
  });
}

check('an empty list denies everyone', [], [], ['10.0.0.1', '127.0.0.1', '::1', '2001:db8::1', '::ffff:10.0.0.1']);

check('IPv4 networks and single hosts', ['10.0.0.0/8', '192.0.2.7/32', '198.51.100.9'],
  ['10.0.0.0', '10.255.255.255', '10.1.2.3', '192.0.2.7', '198.51.100.9'],
  ['11.0.0.0', '9.255.255.255', '192.0.2.6', '192.0.2.8', '198.51.100.8']);

check('addresses with the top bit set', ['200.0.0.0/8', '128.0.0.0/1'],
  ['200.1.2.3', '255.255.255.255', '128.0.0.0', '199.9.9.9'],
  ['127.255.255.255', '0.0.0.0', '10.0.0.1']);

check('0.0.0.0/0 allows every IPv4 client, no IPv6 one', ['0.0.0.0/0'],
  ['0.0.0.0', '1.2.3.4', '255.255.255.255', '::ffff:1.2.3.4'],
  ['::1', '2001:db8::1']);

check('IPv6 networks', ['2001:db8::/32', '::1/128'],
  ['2001:db8::1', '2001:db8:ffff::1', '2001:DB8::abcd', '::1'],
  ['2001:db9::1', '::2', '10.0.0.1']);

check('::/0 allows every IPv6 client and no IPv4 one, mapped or not', ['::/0'],
  ['::1', '2001:db8::1', 'fe80::1'],
  ['10.0.0.1', '::ffff:10.0.0.1', '::ffff:a00:1']);

check('::ffff:0:0/96 allows every IPv4 client and no other IPv6 one', ['::ffff:0:0/96'],
  ['10.0.0.1', '255.255.255.255', '::ffff:10.0.0.1'],
  ['::1', '2001:db8::1']);

check('a mapped network names the IPv4 network it stands for', ['::ffff:a00:0/104'],
  ['10.9.8.7', '::ffff:10.9.8.7'],
  ['11.0.0.1', '::1']);

check('a dotted mapped rule works the same', ['::ffff:10.0.0.0/104'],
  ['10.9.8.7'],
  ['11.0.0.1']);

check('an IPv4-mapped client matches IPv4 rules, normalised or not', ['10.0.0.0/8'],
  ['10.1.2.3', '::ffff:10.1.2.3', '::FFFF:10.1.2.3', '0:0:0:0:0:ffff:a01:203'],
  ['::ffff:11.1.2.3', '2001:db8::1']);

check('an IPv4-compatible address is not taken for an IPv4 client', ['10.0.0.0/8'],
  [],
  ['::10.1.2.3', '::a01:203']);

check('strings that are no address are denied', ['0.0.0.0/0', '::/0'],
  [],
  ['', 'localhost', '10.1.2', '010.1.2.3', '10.1.2.3.4', '256.1.1.1', '::ffff:10.1.2', '1.2.3.4 ']);

check('IPv4 and IPv6 rules together', ['192.168.0.0/16', '2001:db8::/48'],
  ['192.168.1.1', '::ffff:192.168.1.1', '2001:db8:0:1::1'],
  ['192.169.0.1', '2001:db8:1::1']);

test('a malformed rule is a programming error, thrown at construction', (t) => {
  t.throws(() => new Allowlist(['10.0.0.0/33']), { instanceOf: TypeError });
  t.throws(() => new Allowlist(['10.0.0.0/']), { instanceOf: TypeError });
  t.throws(() => new Allowlist(['nope']), { instanceOf: TypeError });
  t.throws(() => new Allowlist(['2001:db8::/129']), { instanceOf: TypeError });
});

test('isEmpty tells a deny-all list apart', (t) => {
  t.true(new Allowlist([]).isEmpty);
  t.false(new Allowlist(['::1/128']).isEmpty);
});
