;; A claim rule on the task's required capabilities: a task that requires
;; the capability `prod` may be claimed only by an agent whose id starts
;; with `release-`. Bind it to `claim_task`. The task's state (with its
;; `required_capabilities`) is in the input's `state`; the claiming agent
;; is in its `fields`.
(module
  (memory (export "memory") 4)
  (data (i32.const 0) "\"required_capabilities\":[")
  (data (i32.const 32) "\"prod\"")
  (data (i32.const 48) "\"agent_id\":\"release-")
  (data (i32.const 80) "allow")
  (data (i32.const 96) "deny a task that needs prod is claimed by a release- agent only")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  ;; Where the bytes $n..$n+$nl first occur in $h..$h+$hl, or -1.
  (func $find (param $h i32) (param $hl i32) (param $n i32) (param $nl i32) (result i32)
    (local $i i32) (local $j i32)
    (loop $outer
      (if (i32.gt_s (i32.add (local.get $i) (local.get $nl)) (local.get $hl))
        (then (return (i32.const -1))))
      (local.set $j (i32.const 0))
      (block $mismatch
        (loop $inner
          (if (i32.eq (local.get $j) (local.get $nl))
            (then (return (local.get $i))))
          (br_if $mismatch
            (i32.ne (i32.load8_u (i32.add (local.get $h) (i32.add (local.get $i) (local.get $j))))
                    (i32.load8_u (i32.add (local.get $n) (local.get $j)))))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br $inner)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $outer))
    (i32.const -1))

  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $list i32) (local $end i32) (local $prod i32)
    (local.set $list (call $find (local.get $ptr) (local.get $len) (i32.const 0) (i32.const 25)))
    (if (i32.ge_s (local.get $list) (i32.const 0))
      (then
        (local.set $list (i32.add (local.get $list) (i32.const 25)))
        ;; The list ends at the first `]` after it.
        (local.set $end (local.get $list))
        (block $found
          (loop $scan
            (br_if $found (i32.ge_u (local.get $end) (local.get $len)))
            (br_if $found (i32.eq (i32.load8_u (i32.add (local.get $ptr) (local.get $end))) (i32.const 93)))
            (local.set $end (i32.add (local.get $end) (i32.const 1)))
            (br $scan)))
        (local.set $prod
          (call $find (i32.add (local.get $ptr) (local.get $list)) (i32.sub (local.get $end) (local.get $list))
                      (i32.const 32) (i32.const 6)))
        (if (i32.and (i32.ge_s (local.get $prod) (i32.const 0))
                     (i32.lt_s (call $find (local.get $ptr) (local.get $len) (i32.const 48) (i32.const 20)) (i32.const 0)))
          (then (return (i64.or (i64.shl (i64.const 96) (i64.const 32)) (i64.const 63)))))))
    (i64.or (i64.shl (i64.const 80) (i64.const 32)) (i64.const 5))))
