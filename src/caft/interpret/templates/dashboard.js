function openTarget(){
  var id=decodeURIComponent(location.hash.slice(1)),el=id&&document.getElementById(id),t=el;
  for(;el;el=el.parentElement){if(el.tagName==="DETAILS")el.open=true;}
  if(t)t.scrollIntoView();
}
function setAll(open){visible().forEach(function(d){d.open=open;});}
window.addEventListener("hashchange",openTarget);openTarget();
var cards=Array.prototype.slice.call(document.querySelectorAll("details.card")),focusAt=-1;
cards.forEach(function(c,i){c.dataset.order=i;c.origin=c.parentElement;});
function visible(){return cards.filter(function(c){return c.style.display!=="none";});}
function num(c,key){var v=parseFloat(c.dataset["f_"+key]);return isNaN(v)?null:v;}
function apply(){
  var q=document.getElementById("q").value.toLowerCase().trim(),layer=document.getElementById("layer").value,
      ticked=document.getElementById("ticked").checked,key=document.getElementById("sort").value,
      desc=document.getElementById("desc").checked,shown=0;
  cards.forEach(function(c){
    var ok=(!q||c.dataset.text.indexOf(q)>=0)&&(layer===""||c.dataset.layer===layer)&&
           (!ticked||c.querySelector("input.pick").checked);
    c.style.display=ok?"":"none";if(ok)shown++;});
  var flat=document.getElementById("sorted");
  if(key===""){cards.forEach(function(c){c.origin.appendChild(c);});
    document.querySelectorAll("details.layer").forEach(function(l){l.style.display="";});flat.style.display="none";}
  else{var order=cards.slice().sort(function(a,b){var x=num(a,key),y=num(b,key);
      if(x===null&&y===null)return a.dataset.order-b.dataset.order;if(x===null)return 1;if(y===null)return -1;
      return desc?y-x:x-y;});
    order.forEach(function(c){flat.appendChild(c);});flat.style.display="";
    document.querySelectorAll("details.layer").forEach(function(l){l.style.display="none";});}
  document.getElementById("count").textContent=shown+" of "+cards.length+" cards";
}
function selectionYaml(){
  var byLayer={},method=document.body.dataset.method;
  cards.forEach(function(c){if(c.querySelector("input.pick").checked){
    (byLayer[c.dataset.layer]=byLayer[c.dataset.layer]||[]).push(parseInt(c.dataset.id,10));}});
  var layers=Object.keys(byLayer).map(Number).sort(function(a,b){return a-b;});
  var lines=["# manual selection ticked in "+document.title,method+":","  layers:"];
  layers.forEach(function(l){lines.push("    "+l+": ["+byLayer[l].sort(function(a,b){return a-b;}).join(", ")+"]");});
  if(!layers.length)lines[2]="  layers: {}";
  lines.push('  notes: "ticked on the dashboard"');return lines.join("\n")+"\n";
}
function copySelection(){
  var box=document.getElementById("yaml");box.value=selectionYaml();box.hidden=false;box.select();
  if(navigator.clipboard&&window.isSecureContext){navigator.clipboard.writeText(box.value).catch(function(){});}
  else{try{document.execCommand("copy");}catch(e){}}
}
function move(step){
  var shown=visible();if(!shown.length)return;
  var at=shown.indexOf(cards[focusAt]);at=Math.max(0,Math.min(shown.length-1,at<0?0:at+step));
  if(focusAt>=0)cards[focusAt].classList.remove("focus");
  focusAt=cards.indexOf(shown[at]);shown[at].classList.add("focus");shown[at].scrollIntoView({block:"nearest"});
}
document.addEventListener("keydown",function(e){
  var typing=e.target.tagName==="INPUT"&&e.target.type!=="checkbox"||e.target.tagName==="TEXTAREA";
  if(e.key==="Escape"){e.target.blur();return;}if(typing||e.ctrlKey||e.metaKey||e.altKey)return;
  var c=cards[focusAt];
  if(e.key==="j"){move(1);}else if(e.key==="k"){move(-1);}
  else if(e.key==="/"){document.getElementById("q").focus();}
  else if(e.key==="x"&&c){var box=c.querySelector("input.pick");box.checked=!box.checked;}
  else if(e.key==="o"&&c){c.open=!c.open;}else{return;}
  e.preventDefault();
});
["q","layer","sort","ticked","desc"].forEach(function(id){
  var el=document.getElementById(id);el.addEventListener("input",apply);el.addEventListener("change",apply);});
apply();
